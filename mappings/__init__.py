"""Built-in mappings, one module per architecture. Each defines ``MAPPING``."""
