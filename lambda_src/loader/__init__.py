"""The data-loader Lambda: builds the FSA index onto EFS at deploy time."""
