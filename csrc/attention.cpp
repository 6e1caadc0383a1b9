#include "bindings.h"
namespace omni { void register_attention(py::module_& m) {} }
