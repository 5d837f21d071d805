// Catch2 v2 (Debian 12) / v3 (newer distros) shim: tests include this only.
#pragma once
#if __has_include(<catch2/catch_all.hpp>)
#include <catch2/catch_all.hpp>
#else
#include <catch2/catch.hpp>
#endif
