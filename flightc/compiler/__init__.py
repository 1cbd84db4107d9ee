"""The compiler: named passes from graph IR to a program bundle."""
