/* A C extension that leaks: extleak.leak(size, count) mallocs count blocks of size bytes in
 * extleak_alloc_block and keeps them. Built by the root test against the interpreter's own
 * headers (tests/integration/test_runtimes.py). */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdlib.h>
#include <string.h>

#define KEPT_MAX 65536
static void *kept[KEPT_MAX]; /* static: keeping them allocates nothing else */
static size_t nkept;

/* Not inlined: the leak's own C function, the site the test expects. */
__attribute__((noinline)) void *extleak_alloc_block(size_t size)
{
    void *p = malloc(size);
    if (p)
        memset(p, 0x5a, size);
    return p;
}

static PyObject *extleak_leak(PyObject *self, PyObject *args)
{
    Py_ssize_t size, count;
    (void)self;
    if (!PyArg_ParseTuple(args, "nn", &size, &count))
        return NULL;
    for (Py_ssize_t i = 0; i < count && nkept < KEPT_MAX; i++)
        kept[nkept++] = extleak_alloc_block((size_t)size);
    Py_RETURN_NONE;
}

static PyMethodDef methods[] = {
    {"leak", extleak_leak, METH_VARARGS, "malloc count blocks of size bytes and keep them"},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "extleak", NULL, -1, methods};

PyMODINIT_FUNC PyInit_extleak(void)
{
    return PyModule_Create(&module);
}
