"""The ways in: the web app, the `reminders` command, the Celery tasks and `reminders up`.
Each is a thin shell around the services and delivery."""
