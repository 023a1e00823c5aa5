"""The served feed model (the evaluated hybrid, trained from SQL) and the ranker shared by the service,
``recsys export`` and the offline check."""
