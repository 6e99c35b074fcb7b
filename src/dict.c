/* Placeholder: being written. */
#include "core.h"

void forage_open_dict(lua_State *L) { (void)L; }
