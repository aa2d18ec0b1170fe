"""The channel-neutral core: flows, commands and rules, over our own Inbound/Reply types."""
