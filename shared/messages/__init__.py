"""Message contracts: SSI wire payloads (`shared.messages.ssi`) and our domain messages (`shared.messages.domain`)."""
