"""notifier: acknowledgements, progress updates and surveys to the wallet app's webhook."""
