"""graviti-dist."""
