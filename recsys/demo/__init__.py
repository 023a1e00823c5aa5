"""A small synthetic shop (catalogue, product pictures, users and events) for demos and tests."""
