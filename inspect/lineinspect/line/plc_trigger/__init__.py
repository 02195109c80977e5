"""Part triggers from the PLC: a Modbus bit or an OPC UA node, with the part id and product code read at the edge.

`settings.py` (station.yaml `plc_triggers:`), `trigger.py` (`PlcTrigger`: one thread per camera,
counter check, product code → recipe, trigger, acknowledgement, alarms), `modbus.py` (polled bit,
holding registers), `opcua.py` (subscription, polling as the fallback). Wired by
`assemble.build_plc_triggers`.
"""
