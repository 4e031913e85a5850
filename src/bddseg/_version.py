"""The package version, in a leaf module: any module can import it without importing the
package ``__init__`` (which sits above everything else)."""

__version__ = "0.1.0"
