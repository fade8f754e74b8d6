"""WSS transport plugin for commy."""
