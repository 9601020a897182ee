"""GGUF: llama.cpp's format. writer (any bundle -> GGUF), reader (GGUF -> bundle), and their parts."""
