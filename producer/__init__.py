"""Publishing interaction events to Kafka."""
