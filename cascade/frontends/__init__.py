"""Front ends on this machine: the microphone and speaker (``cascade run --mic``,
``cascade devices``), with a live terminal view of the conversation."""
