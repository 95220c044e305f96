"""Names and descriptions of Debian archive sections, written for this project.

apt's lists carry section ids only; no offline source describes them, so each id gets a short
display name and a one-sentence description here. A section found in the data but missing here
still gets a label (see `recipes.taxonomies.section_label`), and the build reports it.
"""

from __future__ import annotations

__all__ = ["SECTIONS"]

# id -> (name, description)
SECTIONS: dict[str, tuple[str, str]] = {
    "admin": (
        "Administration Utilities",
        "Tools to administer a system: users, disks, services, boot and monitoring.",
    ),
    "cli-mono": ("Mono and CLI", "Software for the Common Language Infrastructure and Mono."),
    "comm": (
        "Communication Programs",
        "Modems, faxes, serial lines and other point-to-point communication.",
    ),
    "database": ("Databases", "Database servers, clients and tools to work with stored data."),
    "debian-installer": ("Debian Installer", "Components of the Debian installer (udebs)."),
    "debug": ("Debug Symbols", "Debugging information for other packages' binaries."),
    "devel": ("Development", "Compilers, build systems, debuggers and other programming tools."),
    "doc": ("Documentation", "Manuals, guides, reference pages and API documentation."),
    "editors": ("Editors", "Text editors and word processors."),
    "education": ("Education", "Software for teaching and learning."),
    "electronics": ("Electronics", "Circuit design, simulation and tools for electronic hardware."),
    "embedded": ("Embedded Software", "Software and tools for embedded devices."),
    "fonts": ("Fonts", "Font files and tools to manage fonts."),
    "games": ("Games", "Games, toys and other entertainment programs."),
    "gnome": ("GNOME", "Programs and libraries of the GNOME desktop."),
    "gnu-r": ("GNU R", "The R statistical language and its add-on packages."),
    "gnustep": ("GNUstep", "Programs and libraries of the GNUstep environment."),
    "golang": ("Go", "The Go language, its tools and Go libraries."),
    "graphics": (
        "Graphics",
        "Image viewers and editors, drawing and 3D tools, graphics libraries.",
    ),
    "hamradio": ("Amateur Radio", "Software for amateur (ham) radio operators."),
    "haskell": ("Haskell", "The Haskell language, its tools and Haskell libraries."),
    "httpd": ("Web Servers", "Web servers, proxies and their modules."),
    "interpreters": (
        "Interpreters",
        "Interpreters and runtimes for scripting and programming languages.",
    ),
    "introspection": (
        "GObject Introspection",
        "Machine-readable GObject introspection data for language bindings.",
    ),
    "java": ("Java", "The Java platform, its tools and Java libraries."),
    "javascript": ("JavaScript", "JavaScript and Node.js modules and tools."),
    "kde": ("KDE", "Programs and libraries of the KDE desktop."),
    "kernel": ("Kernels", "Operating system kernels, kernel modules and related tools."),
    "libdevel": (
        "Library Development",
        "Headers and static libraries needed to build software against a library.",
    ),
    "libs": ("Libraries", "Shared libraries other programs need at run time."),
    "lisp": ("Lisp", "Lisp dialects (Common Lisp, Emacs Lisp, Scheme) and their libraries."),
    "localization": ("Localization", "Translations, dictionaries and language support."),
    "mail": ("Mail", "Mail readers, servers, filters and mailing-list software."),
    "math": ("Mathematics", "Computer algebra, numerical analysis and other mathematics."),
    "metapackages": ("Metapackages", "Packages that only depend on a set of other packages."),
    "misc": ("Miscellaneous", "Software that fits no other section."),
    "net": ("Networking", "Network daemons, clients and tools."),
    "news": ("Newsgroups", "Usenet news servers and readers."),
    "ocaml": ("OCaml", "The OCaml language, its tools and OCaml libraries."),
    "oldlibs": ("Old Libraries", "Obsolete libraries and transitional packages kept for upgrades."),
    "otherosfs": (
        "Other OS and File Systems",
        "Emulators and tools for other operating systems and their file systems.",
    ),
    "perl": ("Perl", "The Perl language and Perl modules."),
    "php": ("PHP", "The PHP language and PHP libraries."),
    "python": ("Python", "The Python language and Python modules."),
    "ruby": ("Ruby", "The Ruby language and Ruby libraries."),
    "rust": ("Rust", "The Rust language, its tools and Rust crates."),
    "science": ("Science", "Software for scientific work in the natural sciences."),
    "shells": ("Shells", "Command shells and alternative console environments."),
    "sound": ("Sound", "Audio players, editors, servers and sound libraries."),
    "tasks": ("Tasks", "Packages that install a whole task, such as a desktop environment."),
    "tex": ("TeX", "The TeX typesetting system, its macros and tools."),
    "text": ("Text Processing", "Tools to filter, convert, search and format text."),
    "utils": ("Utilities", "General-purpose command-line and system utilities."),
    "vcs": ("Version Control", "Version control systems and related tools."),
    "video": ("Video", "Video players, editors, encoders and video libraries."),
    "web": ("Web Software", "Web browsers, web applications and tools for the web."),
    "x11": ("X Window System", "The X Window System, window managers and X utilities."),
    "xfce": ("Xfce", "Programs and libraries of the Xfce desktop."),
    "zope": ("Zope/Plone", "The Zope application server and the Plone CMS."),
}
