"""The interface: the command line, the HTML report and the demo."""
