// Forwards to base/error.h, where gloas::error and GLOAS_ASSERT live (below
// every layer that uses them); for the files that still name this path.
#pragma once

#include "base/error.h"
