#pragma once
#define COWGUARD_VERSION "0.1.0"
