//! Chat templates: a model's Jinja template rendered over a conversation.
