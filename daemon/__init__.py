"""stylefold's watch-folder daemon: inbox -> spool -> worker pool -> outbox."""
