"""The livedub front end: CLI, WebRTC server, control websocket, MQTT."""
