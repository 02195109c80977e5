"""Cameras: capture backends behind one small protocol, and the supervisor that runs one.

`build_camera(config)` makes a backend from a `cameras/<id>.yaml` definition;
`CameraSupervisor` owns it in its own thread (grab one-by-one, reconnect with
backoff, stream statistics, status). Backend modules import their SDK lazily, so
pypylon and PyGObject are optional extras.
"""
