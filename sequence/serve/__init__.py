"""`sequence serve`: many students' cameras watched by one process (hub: the sources on one engine;
app: the HTTP and WebSocket face; server: binding and start-up; pages/: the class and student pages)."""
