"""HTTP API: uploads inspected by the same Inspector as camera frames, health and readiness.

`create_app` (app.py) is the only place the app is wired; routes/ holds one module per resource.
"""
