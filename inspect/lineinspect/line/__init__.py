"""The line runtime around the core: cameras, station, outbox, MQTT, reject, store, metrics."""
