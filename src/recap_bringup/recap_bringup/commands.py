"""The ``recap`` subcommands this package provides, registered in setup.py under the
``recap.commands`` entry-point group: ``(module, one-line help)``, the module imported only
when its subcommand runs."""

STATION = ("recap_bringup.station", "run the station nodes in one process (--sim: simulated robot)")
