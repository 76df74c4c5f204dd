"""The shared ALS core, for the streaming worker and the nightly job alike (Oryx's
app-common): pure numpy, arrays in and arrays out.

    foldin    exact per-user solve against fixed item factors (batched)
    topn      score a batch of users against every item, keep the best N minus exclusions
    scorer    ``Scorer``: a model's fold-in + top-N + popularity fallback + list encoding
    scoring   a ``Scorer`` over many users at once (CSR histories, threads), in order
    history   a user's decayed per-item totals (``UserState``), its rules and stored form
    similar   item-item cosine neighbours

Imports only the contracts below it (``streamrec.artifact``, ``feedback``, ``keys``,
``events``); never the worker, the producer, the model package or the application.
"""
