"""The ``recap`` subcommands this package provides, registered in setup.py under the
``recap.commands`` entry-point group: ``(module, one-line help)``, the module imported only
when its subcommand runs."""

BAG = ("recap_recorder.bag_cli", "inspect or repair episode bags (info, repair)")
CONVERT = ("recap_recorder.convert_cli", "convert episode bags into a RECAP dataset")
