"""A placeholder ClientApp: Hearth devices take part through the Rust Fleet
client in hearth-core (core/src/federated), never through this app."""

from flwr.app import Context, Error, Message
from flwr.clientapp import ClientApp

app = ClientApp()


@app.train()
def train(msg: Message, context: Context) -> Message:
    """Refuse: no Python client holds a user's history."""
    del context
    return Message(Error(code=0, reason="Hearth devices use the Rust Fleet client"), reply_to=msg)
