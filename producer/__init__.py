"""Publishing interaction events to Kafka, installed as ``streamrec.producer``:
``EventProducer``, replay of time-ordered files, synthetic load.

Imports only the floor (contracts); never the worker, the model package or the application.
"""
