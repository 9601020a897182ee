"""One module per format: `read(path, options) -> ModelBundle` and/or `write(bundle, path, options)`."""
