"""Config files shipped as package data (facemark.configs); base.yaml is the only place defaults live."""
