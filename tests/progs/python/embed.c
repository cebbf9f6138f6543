/* A program embedding CPython through libpython3.X.so, as an application with a scripting layer
 * does: it runs SCRIPT with its arguments. Built by the root test against the interpreter's own
 * headers and library (tests/integration/test_runtimes.py). Usage: embed SCRIPT [ARG...] */
#define PY_SSIZE_T_CLEAN
#include <Python.h>

int main(int argc, char **argv)
{
    PyConfig config;
    PyConfig_InitPythonConfig(&config);
    /* argv as a command line: argv[1] is the script to run */
    PyStatus status = PyConfig_SetBytesArgv(&config, argc, argv);
    if (!PyStatus_Exception(status))
        status = Py_InitializeFromConfig(&config);
    PyConfig_Clear(&config);
    if (PyStatus_Exception(status))
        Py_ExitStatusException(status);
    return Py_RunMain();
}
