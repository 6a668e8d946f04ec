"""The qxedge edge agent: config, pipeline, features, inference, decisions and the CLI."""
