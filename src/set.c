/* Placeholder: being written. */
#include "core.h"

void forage_open_set(lua_State *L) { (void)L; }
