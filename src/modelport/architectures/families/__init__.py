"""The built-in families, one module each: every module here is imported, and so registered, with the
package. A new family is one new file."""
from importlib import import_module
from pkgutil import iter_modules

for _module in iter_modules(__path__):
    import_module(f"{__name__}.{_module.name}")
