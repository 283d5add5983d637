"""The contract every side of offhook shares: the config schema, the dial plan, key names, atomic
writes, logging and certificate issuing. It imports nothing from the phone, the server, the image
builder or the board, so all of them can depend on it."""
