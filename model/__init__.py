"""Training: load interactions, fit implicit ALS, write a verified model artifact."""
