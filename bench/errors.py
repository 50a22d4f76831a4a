"""The error policy: every error caused by the user's input is an :class:`InputError`.

Bad input is anything the user can fix by changing what they gave: a config
file or override, a dataset or its metadata, a score-map folder, a run folder
in the wrong state, outputs that already exist, a missing weights file. Each
such error subclasses :class:`InputError` and says, in one message, which file,
line or key is wrong, the value seen and what was expected. Nothing is written
before one is raised (or what was written is removed).

The command line maps every :class:`InputError` to exit code 2 with that one
message and no traceback, for every command, in one place
(:func:`bench.commands.cli.main`). Failures that are not the input's fault
but that the user can act on (a NaN loss, a full disk, out of memory, a Ray that
does not start) exit 1 with one line; anything else is a bug and keeps its
traceback.

Each subclass also keeps the built-in type it has always been
(``class ConfigError(InputError, ValueError)``), so ``except ValueError`` or
``except FileNotFoundError`` around library calls keeps working. A plain
``ValueError`` / ``OSError`` raised on user input is a defect: wrap it where the
input is read, naming the file. The input errors of the package:

* :class:`bench.config.ConfigError`: a config file, study file, override or option;
* :class:`bench.data.samples.DatasetFormatError`, :class:`bench.data.samples.DatasetNotFoundError`:
  a dataset's files (metadata, images, masks);
* :class:`bench.model.backbones.MissingWeightsError`: a weights file that is not there;
* :class:`bench.scoring.saved_maps.ScoreMapError`, :class:`bench.scoring.map_methods.MethodError`;
* :class:`bench.run.pipeline.RunExistsError`, :class:`bench.run.pipeline.ResumeError`: a run folder;
* :class:`bench.study.results.StudyError` (and its :class:`bench.study.ray_executor.SharedFolderError`);
* :class:`bench.commands.cam_images.CamCommandError`, :class:`bench.run.method_comparison.MethodsFolderError` (``bench methods``);
* :class:`OutputsExistError` and :class:`MissingInputError` below, for outputs and inputs of any command.
"""

from __future__ import annotations


class InputError(Exception):
    """The user's input is invalid; the message names the file, line or key and what was expected (exit code 2)."""


class OutputsExistError(InputError, FileExistsError):
    """An output file or folder already exists (or a plain file stands where a folder goes); nothing was written."""


class MissingInputError(InputError, FileNotFoundError):
    """A file or folder the command reads is not there (or not in the state it needs, e.g. an unfinished run)."""
