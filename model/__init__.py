"""The nightly job, installed as ``streamrec.model``: load interactions, fit implicit ALS,
evaluate honestly against baselines, gate, write a verified model artifact, publish it.

Imports only the floor (contracts and ``streamrec.als``); never ``streamrec.worker``.
"""
