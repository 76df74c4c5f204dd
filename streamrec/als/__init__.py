"""The shared ALS core: fold-in, top-N, batch scoring, user history, item-item similarity."""
