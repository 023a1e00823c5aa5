"""Offline batch exports (``recsys export``): the service's rankings for every user or item, in bulk."""
