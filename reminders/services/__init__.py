"""Use cases: enrol, reschedule, cancel; import a list; accounts; replies; what a reminder
says. The interfaces call these; these call the pure core and the store."""
