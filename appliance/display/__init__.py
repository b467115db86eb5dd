"""Room displays: the web page (served by the appliance, or opened from disk) and the terminal display."""
