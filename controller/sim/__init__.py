"""The site replay: a simulated site driven by the same policy functions the live controller
calls (`rigsite replay`)."""
