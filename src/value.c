/* Placeholder: being written. */
#include "core.h"

void forage_open_value(lua_State *L) { (void)L; }
