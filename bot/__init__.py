"""干部作风建设助手: the bot's core, settings, CLI and the app that hosts its channels."""
