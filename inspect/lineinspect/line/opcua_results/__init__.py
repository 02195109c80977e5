"""An OPC UA server where the MES reads results, shaped after OPC 40100 (Machine Vision), beside the MQTT channel.

`settings.py` (station.yaml `opcua_server:`), `server.py` (`OpcUaResultServer`: the result sink, the
station and camera nodes, security). Wired by `assemble.build_station`.
"""
