"""Sparkplug B output for SCADA hosts, beside (never instead of) the QoS 1 result channel.

`settings.py` (station.yaml `sparkplug:`), `payload.py` (the Sparkplug B protobuf payload), `node.py`
(`SparkplugNode`: births, deaths, bdSeq and seq, DDATA per result, rebirth on NCMD). Wired by
`assemble.build_station`.
"""
