"""One cog per feature, each an extension loaded by `PalicordBot.setup_hook`."""
