// Hearth's `Logger` protocol under a name of its own: a file that also imports
// `os` sees two `Logger`s, and `Hearth.Logger` does not help because the module
// Hearth also holds a class named Hearth. This file imports Hearth only.
import Hearth

typealias HearthLogger = Logger
