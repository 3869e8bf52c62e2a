{
  "targets": [
    {
      "target_name": "dptcp",
      "sources": ["native/addon.cc", "native/tun.cc", "native/reader.cc", "native/aead.cc", "native/errors.cc", "native/eliminator.cc", "native/fastpath.cc", "native/sendpath.cc", "native/watch.cc"],
      "include_dirs": ["<!(node -p \"require('node-addon-api').include_dir\")"],
      "defines": ["NAPI_VERSION=8", "NAPI_CPP_EXCEPTIONS", "NODE_ADDON_API_DISABLE_DEPRECATED"],
      "cflags!": ["-fno-exceptions"],
      "cflags_cc!": ["-fno-exceptions"],
      "cflags": ["-Wall", "-Wextra", "-Werror", "-Wno-unused-parameter"],
      "cflags_cc": ["-std=c++17", "-fexceptions", "-Wall", "-Wextra", "-Werror", "-Wno-unused-parameter"]
    }
  ]
}
