/*
 * java.util.Arrays (reduced: the int[] searching of JDK 1.5)
 */
package java.util;

public class Arrays {
    // Suppresses default constructor, ensuring non-instantiability.
    private Arrays() {
    }

    /**
     * Sorts the specified array of ints into ascending numerical order.
     *
     * @param a the array to be sorted.
     */
    public static void sort(int[] a) {
        sort1(a, 0, a.length);
    }

    private static void sort1(int x[], int off, int len) {
        // Insertion sort on smallest arrays
        for (int i=off; i<len+off; i++)
            for (int j=i; j>off && x[j-1]>x[j]; j--)
                swap(x, j, j-1);
    }

    private static void swap(int x[], int a, int b) {
        int t = x[a];
        x[a] = x[b];
        x[b] = t;
    }
}
